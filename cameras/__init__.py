"""Camera sources: simulator, image folder / video replay (OpenCV), GenICam (optional extra).

Every source is a context manager yielding `Frame` and `CoilEvent` values in stream order.
"""
