"""Studies built on the kit, not part of its vocabulary: the conditioning proof (``adherence``: hit rates and the
price of steering, ``python -m mattergen_kit.studies.adherence``) and the resumable ML labelling job (``label_job``).
They sit on the top floor (docs/architecture.md): they may use everything, nothing in the kit uses them."""
