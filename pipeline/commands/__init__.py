"""The ``faceiqa`` commands by family: ``running``, ``evaluating``, ``training``."""
