"""tunesmith: fine-tune open language models on your own examples and prove whether it helped."""

__version__ = "0.1.0"
