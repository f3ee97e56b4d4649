

def test_precision_pairs_and_probe_gradient_norms_read_the_results_file():
    from cdn.experiments.variants import precision_pairs, probe_gradient_norms

    row = {"clean_accuracy": 0.5, "psnr_D(y)_0.05": 30.0, "psnr_D(y)_0.1": 25.0, "psnr_D(y)_0.2": 20.0, "dsm": 0.4,
           "ms_per_step": 100.0}
    results = {"entries": {"cifar10": {"a": {"float32": dict(row, gradient_norms={"ce": 1.0, "dsm": 2.0}),
                                             "bf16": dict(row, clean_accuracy=0.49)},
                                       "b": {"float32": row}},
                           "tiny-imagenet": {"c": {"float32": dict(row, gradient_norms={"ce": 3.0})}}}}
    pairs = precision_pairs(results)
    assert [(p["variant"], p["precision"], p["clean acc."]) for p in pairs] == [("a", "float32", 0.5), ("a", "bf16", 0.49)]
    assert pairs[0]["D(y) σ=.1"] == 25.0 and pairs[0]["ms/step"] == 100.0
    assert probe_gradient_norms(results) == {"cifar10: a": {"ce": 1.0, "dsm": 2.0}, "tiny-imagenet: c": {"ce": 3.0}}
