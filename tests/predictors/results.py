"""Returns a value of the kind the request names."""

import io

import numpy as np
from PIL import Image

import openbayes_serving as serv


def image_bytes(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (255, 0, 0)).save(buffer, format=fmt)
    return buffer.getvalue()


class Predictor:
    def predict(self, json):
        kind = json["kind"]
        return {
            "dict": lambda: {"a": 1, "text": "中文"},
            "list": lambda: [1, 2, 3],
            "tuple": lambda: (1, "two"),
            "str": lambda: "héllo",
            "png": lambda: image_bytes("PNG"),
            "jpeg": lambda: image_bytes("JPEG"),
            "raw": lambda: b"\x00\x01\x02",
            "none": lambda: None,
            "int": lambda: 7,
            "ndarray": lambda: np.arange(6, dtype=np.float32).reshape(2, 3),
            "npscalar": lambda: np.float64(2.5),
            "nested_numpy": lambda: {"v": np.int64(3), "a": np.array([1, 2])},
            "bytes_in_dict": lambda: {"blob": b"\x00\xffhi"},
            "int_keys": lambda: {1: "one"},
            "unsupported": lambda: object(),
        }[kind]()


if __name__ == "__main__":
    serv.run(Predictor)
