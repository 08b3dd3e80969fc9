"""Exit 0 when the Kafka broker at HOST:PORT answers an ApiVersions request without error: the check
`kafka-broker-api-versions.sh` makes, for the local image's healthcheck (it has no Kafka scripts)."""

import socket
import struct
import sys


def read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def main(address: str) -> int:
    host, _, port = address.rpartition(":")
    client = b"healthcheck"
    # Request header v1 (api key 18 ApiVersions, version 0, correlation id 7, client id); no body.
    request = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", read(sock, 4))
        correlation, error = struct.unpack(">ih", read(sock, size)[:6])
    if correlation != 7 or error != 0:
        print(f"ApiVersions: correlation {correlation}, error code {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
