"""Finding, aligning and following faces: what every pipeline frame goes through.

``detect`` (MTCNN, with the batched ``fast_mtcnn`` forward), ``align`` (5-point similarity
alignment, pure geometry), the per-face measures ``pose`` (frontalness), ``exposure`` and
``sharpness``, ``track`` (face tracks across a video's frames, cut at shots), ``clips``
(faces sampled from one-person clips and tracked videos) and ``recognizer`` (dlib's face
descriptor, the recogniser every recognition figure is measured with).

Never imports :mod:`face_iqa.model`, :mod:`face_iqa.learn` or :mod:`face_iqa.judge`.
"""
