"""MedSeg in the browser: a trame-slicer web app on the Slicer module's own logic (``MedSegModuleLib``).

Needs the ``web`` extra (``pip install -e '.[web]'``). ``medseg web`` starts it; see ``docs/web.md``.

- :mod:`.app`: the app (scene, views, handlers) and :func:`~.app.serve`.
- :mod:`.ui`: the page layout.
- :mod:`.segment_job`: a segmentation run followed from the event loop (progress, cancel).
- :mod:`.exports`: the downloads (``.seg.nrrd``, ``.nii.gz``).
- :mod:`.work_folder`: the session folder: upload limit, sanitised names, nothing served from outside it.
"""
