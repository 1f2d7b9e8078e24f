"""The application around the models, as anomalib's ``engine``: what a run does with a model.

- :mod:`.config`: a run's settings (:class:`~.config.RunConfig`), plain data;
- :mod:`.preflight`: every setting and file checked before anything is written;
- :mod:`.files`, :mod:`.run_folder`, :mod:`.checkpoint`: atomic files, the run folder,
  checkpoints as data;
- :mod:`.sampling`, :mod:`.signals`, :mod:`.distributed`, :mod:`.resume`, :mod:`.training`:
  the training loop, seeded, resumable, stoppable, on one process or several;
- :mod:`.thresholds`, :mod:`.evaluate`, :mod:`.visualize`, :mod:`.predict`, :mod:`.map_png`:
  what a trained model yields;
- :mod:`.trained_run`: a finished run from Python (:func:`~.trained_run.load_run`);
- :mod:`.export`: a run's model as ONNX, TorchScript or ``torch.export``;
- :mod:`.memory`: running out of memory, with advice.

The command line (:mod:`flowkit.models.cli`) turns flags into these calls; nothing here parses
flags.
"""

__all__: list[str] = []
