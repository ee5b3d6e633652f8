"""Makes a PNG from the raw body: a 1-pixel-high strip, one grey pixel per byte."""

import io

from PIL import Image

import openbayes_serving as serv


class Predictor:
    def predict(self, data):
        image = Image.frombytes("L", (len(data), 1), data)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


if __name__ == "__main__":
    serv.run(Predictor)
