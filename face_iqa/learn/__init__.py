"""What makes a model: ``degrade`` (the synthetic damage), ``utility`` (recognition utility
as a label), ``synthetic`` and ``footage`` (the label sets built from clean faces and from
real footage), ``label_sets`` (reading and splitting labelled faces), and training:
``config`` (the recipe), ``data`` (datasets and pairs), ``loop`` (the loop) and ``export``
(a run to a shipped model).

May use :mod:`face_iqa.faces` and :mod:`face_iqa.model`; never imports :mod:`face_iqa.judge`.
"""
