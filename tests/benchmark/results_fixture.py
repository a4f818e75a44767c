"""A small, hand-made results file (the shape the sweep writes) for table/plot tests."""


def make_rows():
    rows = []
    spec = [
        # arch, extractor, res, proposals, stride, latency, mAP, small
        ("ssd", "mobilenet_v2", 300, None, None, 40.0, 0.30, 0.05),
        ("ssd", "mobilenet_v2", 600, None, None, 120.0, 0.38, 0.15),
        ("ssd", "resnet50_v1", 300, None, None, 90.0, 0.33, 0.06),
        ("faster_rcnn", "resnet50_v1", 300, 10, 16, 150.0, 0.36, 0.10),
        ("faster_rcnn", "resnet50_v1", 300, 50, 16, 190.0, 0.41, 0.12),
        ("faster_rcnn", "resnet50_v1", 300, 300, 16, 400.0, 0.43, 0.13),
        ("faster_rcnn", "resnet50_v1", 300, 50, 8, 380.0, 0.44, 0.16),
        ("rfcn", "resnet50_v1", 300, 10, 16, 140.0, 0.37, 0.10),
        ("rfcn", "resnet50_v1", 300, 300, 16, 150.0, 0.40, 0.11),
        ("cascade_rcnn", "resnet50_v1", 300, 50, 16, 450.0, 0.46, 0.14),
    ]
    for i, (arch, ext, res, props, stride, ms, ap, small) in enumerate(spec):
        rows.append(
            {
                "cell_id": f"c{i:02d}",
                "train_key": f"t{i // 2}",
                "meta_arch": arch,
                "feature_extractor": ext,
                "fpn": False,
                "resolution": res,
                "train_resolution": res,
                "num_proposals": props,
                "output_stride": stride,
                "label": f"{arch} {ext} {res}px"
                + (f" p{props}" if props else "")
                + (f" s{stride}" if stride else ""),
                "latency_ms": ms,
                "latency_p90_ms": ms * 1.1,
                "latency_nopost_ms": ms * 0.9,
                "latency_nopost_p90_ms": ms,
                "first_call_s": 3.0,
                "peak_rss_mb": 800 + 10 * i,
                "gflops": ms * 0.2,
                "params": 1e7 + i,
                "params_trainable": 1e7,
                "mAP": ap,
                "mAP@.50": ap + 0.3,
                "mAP@.75": ap,
                "mAP (small)": small,
                "mAP (medium)": ap,
                "mAP (large)": ap + 0.1,
                "AR@100": ap + 0.2,
                "error": "",
                "env": {"cpu_model": "test cpu", "tf_version": "2.20.0"},
            }
        )
    rows.append(
        {
            "cell_id": "bad",
            "train_key": "tb",
            "meta_arch": "rfcn",
            "feature_extractor": "vgg16",
            "label": "rfcn vgg16 600px",
            "error": "OOM: killed",
        }
    )
    return rows
