"""What judges a model: ``recognition`` (the EDC on photos, pAUC, thresholds), ``video``
(the EDC and best shot on real footage), ``identities`` (identity photo sets: the person's
face in each photo, the EDC per set with a bootstrap, the best photo), ``face_sets`` (the
faces a comparison runs on), ``gmad`` (the gMAD competition between two measures) and
``weights_map`` (a map of the hyper network's generated weights).

Sits above the rest of the library: may use :mod:`face_iqa.faces`, :mod:`face_iqa.model` and
:mod:`face_iqa.learn`.
"""
