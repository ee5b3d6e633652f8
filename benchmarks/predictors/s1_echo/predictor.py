"""S1 overhead: answer the parsed body as it came. Runs unchanged on both runtimes.

Injected parameters carry no annotation: the reference 0.5.0 looks an annotated
parameter up by its annotation, not its name.
"""

from __future__ import annotations

import openbayes_serving as serv


class Predictor:
    def predict(self, json) -> dict:
        return json


if __name__ == "__main__":
    serv.run(Predictor)
