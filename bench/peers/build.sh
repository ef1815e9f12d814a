#!/usr/bin/env bash
# Builds grpc-gateway v1 for Switchboard's protos with Debian's toolchain (GOPATH mode, no
# network): protoc + protoc-gen-go + protoc-gen-grpc-gateway generate Go for
# proto/switchboard/{v1,gateway/v1}, then `go build` links bench/peers/grpcgateway/main.go.
# Output: bench/peers/build/bin/switchboard-grpc-gateway. Needs bench/peers/install.sh first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$here/build"
gopath="$build/gopath"
pkg="$gopath/src/switchboard"
python="${PYTHON:-$repo/.venv/bin/python}"
googleapis="$("$python" -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parent.parent.parent)')"

rm -rf "$gopath" && mkdir -p "$pkg/gen" "$pkg/cmd" "$build/bin"
# Go import paths for files that carry no go_package option.
maps="Mswitchboard/gateway/v1/options.proto=switchboard/gen/switchboard/gateway/v1"
maps+=",Mgoogle/api/annotations.proto=google.golang.org/genproto/googleapis/api/annotations"
maps+=",Mgoogle/api/field_behavior.proto=google.golang.org/genproto/googleapis/api/annotations"
maps+=",Mgoogle/api/http.proto=google.golang.org/genproto/googleapis/api/annotations"
maps+=",Mgoogle/rpc/status.proto=google.golang.org/genproto/googleapis/rpc/status"
# Well-known types as the APIv1 packages grpc-gateway 1.6's runtime (golang/protobuf 1.3) reads.
maps+=",Mgoogle/protobuf/timestamp.proto=github.com/golang/protobuf/ptypes/timestamp"
maps+=",Mgoogle/protobuf/empty.proto=github.com/golang/protobuf/ptypes/empty"
maps+=",Mgoogle/protobuf/field_mask.proto=google.golang.org/genproto/protobuf/field_mask"
maps+=",Mgoogle/protobuf/descriptor.proto=github.com/golang/protobuf/protoc-gen-go/descriptor"
for file in "$repo"/proto/switchboard/v1/*.proto; do
  maps+=",Mswitchboard/v1/$(basename "$file")=switchboard/gen/switchboard/v1"
done
# grpc-gateway v1.6 refuses path parameters on client/bidi streaming methods
# (ImportMessages, Converse); the copy it generates from drops those methods' HttpRules
# (the REST benchmark uses unary methods only; the service definitions are unchanged).
rm -rf "$build/proto" && cp -r "$repo/proto" "$build/proto"
"$python" - "$build/proto/switchboard/v1" <<'PY'
import pathlib, re, sys
rule = re.compile(r"(rpc \w+\(stream [^)]*\) returns \([^)]*\) \{)\s*option \(google\.api\.http\) = \{.*?\n\s*\};", re.S)
for path in pathlib.Path(sys.argv[1]).glob("*.proto"):
    path.write_text(rule.sub(r"\1", path.read_text()))
PY
includes=(-I "$build/proto" -I "$googleapis" -I /usr/include)
cd "$build/proto"
protoc "${includes[@]}" --go_out="plugins=grpc,$maps:$pkg/gen" switchboard/gateway/v1/options.proto
protoc "${includes[@]}" --go_out="plugins=grpc,$maps:$pkg/gen" \
  --grpc-gateway_out="logtostderr=true,$maps:$pkg/gen" switchboard/v1/*.proto
# protoc-gen-go puts files under their import path relative to the output directory
if [ -d "$pkg/gen/switchboard/gen" ]; then
  cp -r "$pkg/gen/switchboard/gen/." "$pkg/gen/" && rm -rf "$pkg/gen/switchboard/gen"
fi
cp "$here/grpcgateway/main.go" "$pkg/cmd/main.go"
cd "$pkg/cmd"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$build/gocache" GOFLAGS= \
  go build -o "$build/bin/switchboard-grpc-gateway" .
echo "built $build/bin/switchboard-grpc-gateway"
