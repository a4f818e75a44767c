"""``detbench list``: what is registered, with the options each supports."""

import argparse

EXAMPLE = "example:\n  detbench list"


def list_registered():
    import detbench.feature_extractors  # noqa: F401
    import detbench.meta_arch  # noqa: F401
    from detbench.config.grid import AXES
    from detbench.feature_extractors.base import FEATURE_EXTRACTORS
    from detbench.meta_arch.base import META_ARCHITECTURES

    lines = ["meta-architectures:"]
    for name, cls in META_ARCHITECTURES.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        lines.append(f"  {name:22s} {doc[0] if doc else ''}")
    lines.append("feature extractors:")
    lines.append(f"  {'name':22s} {'output strides':16s} {'fpn':5s} meta-architectures")
    for name, cls in FEATURE_EXTRACTORS.items():
        strides = "/".join(map(str, cls.supported_output_strides))
        lines.append(
            f"  {name:22s} {strides:16s} {'yes' if cls.supports_fpn else 'no':5s} "
            f"{', '.join(cls.meta_architectures)}"
        )
    lines.append("sweep axes: " + ", ".join(AXES.names()) + ", or any pipeline field by path")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="detbench list",
        description="Registered meta-architectures (one line each), feature "
        "extractors (output strides, FPN, meta-architectures served) and sweep axes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLE,
    )
    parser.parse_args(argv)
    print(list_registered())
    return 0
