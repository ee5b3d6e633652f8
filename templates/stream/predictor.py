"""A streaming predictor: each yielded chunk is sent as soon as it is made."""

import time

import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        # A generator streams: str/bytes go out raw, dicts as NDJSON lines, or as
        # Server-Sent Events when the client sends `Accept: text/event-stream`.
        # The predict slot is held until the generator ends or the client leaves.
        text = str(json.get("text", "hello, world"))
        for word in text.split():
            yield {"token": word}
            time.sleep(float(json.get("delay", 0.01)))


if __name__ == "__main__":
    serv.run(Predictor)
