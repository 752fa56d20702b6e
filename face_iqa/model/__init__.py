"""The quality model: ``hyperiqa`` (the HyperIQA modules), ``backbones`` (the feature
extractors it taps), ``checkpoint`` (weights with their contract, loaded untrusted) and
``scorer`` (batched, device-aware scoring of aligned face crops).

May use :mod:`face_iqa.faces`; never imports :mod:`face_iqa.learn` or :mod:`face_iqa.judge`.
"""
