"""What several test modules share beyond fixtures (those live in ``conftest.py``)."""
