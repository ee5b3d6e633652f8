"""S1 overhead on LitServe: answer the parsed JSON body as it came."""

from __future__ import annotations

from typing import Any

import litserve as ls
from runner import flags, serve


class Echo(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request) -> Any:
        return request

    def predict(self, x: Any) -> Any:
        return x

    def encode_response(self, output: Any):
        return output


if __name__ == "__main__":
    serve(Echo(), flags())
