"""GIST on language models: Hugging Face text encoders, text PEFT methods, GLUE and a synthetic text task.

Needs the ``text`` extra (``pip install gist-ray[text]``: transformers, peft, datasets) to run text models. The
platform's config, loop and drivers import these modules (a run's modality comes from its backbone), but every one
of them imports transformers / peft / datasets only inside the functions that load a text model, so an image run
never loads them. Modules:

- :mod:`.backbones`  text encoders by name (BERT / RoBERTa / MiniLM, T5 encoder; tiny random ones for tests)
- :mod:`.gist`       :class:`TextGistModel`: encoder + Gist token + one head; ``(cls, gist)`` logits in training
- :mod:`.methods`    the text PEFT registry (Houlsby / Pfeiffer adapters, peft's LoRA family, BitFit, FT, LP)
- :mod:`.glue`       GLUE in its TSV distribution layout and in ``datasets`` saved-to-disk form
- :mod:`.synthetic`  built-in synthetic text tasks (no download) and their word-level tokenizer
- :mod:`.splits`     :class:`TextSplit`, the tokenised split and its row-indices -> model-inputs function
- :mod:`.tokenize_cache`  tokenisation cached once per (task, split, tokenizer, max length)
- :mod:`.metrics`    the GLUE metrics (MCC, F1, accuracy, Pearson, Spearman)
- :mod:`.check`      every problem of a GLUE root, one line each
- :mod:`.train`      a plain-PyTorch GIST training / evaluation function for text
- :mod:`.quickstart` ``python -m gist_ray.text.quickstart``: GIST on and off on the synthetic task, offline
- :mod:`.config_check` the run config's text rules (``Config.check`` calls them for a text backbone)
"""
