"""Proto comments, read from the SourceCodeInfo of FileDescriptorProtos.

The Python descriptor pool keeps no comments, so documentation generators read them from a
descriptor set built with ``protoc --include_source_info``. ``Comments`` maps the full name of
an element to its cleaned leading comment (its trailing comment when it has no leading one).

Keys: messages, enums, services, fields, oneofs and methods by their protobuf full name; enum
values by ``<enum full name>.<VALUE>`` (protobuf scopes value names to the enum's parent, which
would make two enums' values collide).

Invariant: a comment is never invented; an element without one is absent, and ``get`` returns "".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf import descriptor_pb2

__all__ = ["Comments"]

# Field numbers of FileDescriptorProto / DescriptorProto / ... used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

Path = tuple[int, ...]


@dataclass(frozen=True)
class Comments:
    """Full name → comment text (see the module docstring for the keys)."""

    by_name: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_files(cls, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> Comments:
        """The comments of every element of ``files`` (a file without source info adds none)."""
        found: dict[str, str] = {}
        for file in files:
            texts = _texts_by_path(file.source_code_info)
            if texts:
                for path, name in _names_by_path(file):
                    text = texts.get(path)
                    if text:
                        found[name] = text
        return cls(found)

    def get(self, full_name: str) -> str:
        return self.by_name.get(full_name, "")


def _texts_by_path(info: descriptor_pb2.SourceCodeInfo) -> dict[Path, str]:
    texts: dict[Path, str] = {}
    for location in info.location:
        text = _clean(location.leading_comments or location.trailing_comments)
        if text:
            texts[tuple(location.path)] = text
    return texts


def _clean(raw: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in raw.strip("\n").split("\n")]
    return "\n".join(line.rstrip() for line in lines).strip()


def _names_by_path(file: descriptor_pb2.FileDescriptorProto) -> list[tuple[Path, str]]:
    prefix = f"{file.package}." if file.package else ""
    names: list[tuple[Path, str]] = []
    for index, message in enumerate(file.message_type):
        names += _message_names((_FILE_MESSAGE, index), prefix + message.name, message)
    for index, enum in enumerate(file.enum_type):
        names += _enum_names((_FILE_ENUM, index), prefix + enum.name, enum)
    for index, service in enumerate(file.service):
        full = prefix + service.name
        names.append(((_FILE_SERVICE, index), full))
        names += _indexed((_FILE_SERVICE, index, _SERVICE_METHOD), full, service.method)
    return names


def _message_names(
    path: Path, full: str, message: descriptor_pb2.DescriptorProto
) -> list[tuple[Path, str]]:
    names: list[tuple[Path, str]] = [(path, full)]
    names += _indexed((*path, _MESSAGE_FIELD), full, message.field)
    names += _indexed((*path, _MESSAGE_ONEOF), full, message.oneof_decl)
    for index, nested in enumerate(message.nested_type):
        names += _message_names((*path, _MESSAGE_NESTED, index), f"{full}.{nested.name}", nested)
    for index, enum in enumerate(message.enum_type):
        names += _enum_names((*path, _MESSAGE_ENUM, index), f"{full}.{enum.name}", enum)
    return names


def _enum_names(
    path: Path, full: str, enum: descriptor_pb2.EnumDescriptorProto
) -> list[tuple[Path, str]]:
    return [(path, full), *_indexed((*path, _ENUM_VALUE), full, enum.value)]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def _indexed(path: Path, parent: str, elements: Sequence[_Named]) -> list[tuple[Path, str]]:
    return [((*path, index), f"{parent}.{element.name}") for index, element in enumerate(elements)]
