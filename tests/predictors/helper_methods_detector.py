"""The published yolov5 predictor's shape, written for openbayes-serving 0.1.x and 0.5.0.

``__init__(self, config)`` calls 0.1.x's ``config.limit_concurrency(2)``; predict fetches
``json["url"]`` itself (I/O inside predict) and calls its own ``preprocess(img0)`` and
``postprocess(output, threshold, img0, img)``, which no pipeline could call.
"""

import io

import numpy as np
import requests
from PIL import Image

import openbayes_serving as serv


class Predictor:
    def __init__(self, config):
        config.limit_concurrency(2)
        self.names = config.get("names", ["dark", "light"])
        self.size = 8

    def preprocess(self, img0):
        img = img0.resize((self.size, self.size))
        return np.asarray(img, dtype=np.float32) / 255.0

    def postprocess(self, output, threshold, img0, img):
        boxes, classes = [], []
        if output >= threshold:
            boxes.append(((0, 0), (img0.width, img0.height)))
            classes.append(self.names[int(img.mean() > 0.5)])
        return boxes, classes

    def predict(self, json):
        threshold = float(json["threshold"])
        content = requests.get(json["url"], timeout=10).content
        img0 = Image.open(io.BytesIO(content)).convert("RGB")
        img = self.preprocess(img0)
        output = float(img.max())
        predicted_boxes, predicted_classes = self.postprocess(output, threshold, img0, img)
        return predicted_boxes, predicted_classes


if __name__ == "__main__":
    serv.run(Predictor)
