// REST calls to the gateway: the bearer token on every request, every failure an ApiError
// carrying the google.rpc.Status message the gateway (or the service) sent.

const CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

export class ApiError extends Error {
  constructor(status, httpStatus = 0) {
    super(`${CODE_NAMES[status.code] ?? `code ${status.code}`}: ${status.message}`);
    this.status = status;
    this.httpStatus = httpStatus;
  }
}

export function statusError(status) {
  return new ApiError({ code: status?.code ?? 2, message: status?.message ?? "unknown error" });
}

async function failure(response) {
  const text = await response.text();
  try {
    const status = JSON.parse(text);
    if (typeof status.message === "string") return new ApiError(status, response.status);
  } catch {
    // not a Status body: fall through
  }
  return new ApiError({ code: 2, message: `HTTP ${response.status} ${text.slice(0, 200)}` }, response.status);
}

export function newRequestId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async call(method, path, { query = {}, body } = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== "") url.searchParams.set(name, String(value));
    }
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin", cache: "no-store",
      });
    } catch (error) {
      throw new ApiError({ code: 14, message: `the gateway cannot be reached (${error.message})` });
    }
    if (!response.ok) throw await failure(response);
    return response.status === 204 ? {} : response.json();
  }

  // The session: verifies the token and sets the cookie that EventSource and WebSocket use.
  signIn() { return this.call("POST", "/auth/session"); }
  signOut() { return this.call("DELETE", "/auth/session"); }

  listRooms(pageToken) {
    return this.call("GET", "/v1/rooms", { query: { pageSize: 100, pageToken } });
  }
  createRoom(roomId) {
    return this.call("POST", "/v1/rooms", { query: { roomId }, body: { displayName: roomId } });
  }
  listMessages(room, pageToken, pageSize = 50) {
    return this.call("GET", `/v1/${room}/messages`, { query: { pageSize, pageToken } });
  }
  postMessage(room, text, requestId) {
    return this.call("POST", `/v1/${room}/messages`, { query: { requestId }, body: { text } });
  }
  listMembers(room) {
    return this.call("GET", `/v1/${room}/members`);
  }
}
