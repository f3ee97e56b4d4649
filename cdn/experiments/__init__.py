"""The measured experiments of the book, one module per measurement, each built on the core package
(``cdn.joint``, ``cdn.train``, ``cdn.runs``, ``cdn.evaluate``) and never on the book (``cdn.book``):
robustness (``attacks``, ``certify``), corruptions and calibration (``corruptions``), out-of-distribution
detection (``ood``), generation (``sampling``), training cost (``efficiency``, ``compiled_loss``,
``per_image_loader``, ``jem``, ``short_budget``, ``gpu_sprint``), which network to train (``variants``,
``joint_search``), the referees' comparisons (``diffusion_classifier``, ``classical``), and the theory
chapters' computations (``tweedie``, ``noise_blind``, ``jacobian``, ``generative_discriminative``,
``costs``)."""
