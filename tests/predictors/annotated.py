from __future__ import annotations

import openbayes_serving as serv


class Predictor:
    def predict(self, json: dict, query: params, *, extra: int = 3):  # noqa: F821
        return {"json": json, "query": query.to_dict(), "extra": extra}


if __name__ == "__main__":
    serv.run(Predictor)
