"""The seed document's food-order processor, as a runnable example (see ``main.py``)."""
