"""async preprocess/postprocess are awaited on the event loop."""

import asyncio

import openbayes_serving as serv


class Predictor:
    async def preprocess(self, json, params):
        await asyncio.sleep(0.01)
        return {"value": json["value"], "scale": int(params.get("scale", 1))}

    def predict(self, x):
        return x["value"] * x["scale"]

    async def postprocess(self, y):
        return {"result": y}


if __name__ == "__main__":
    serv.run(Predictor)
