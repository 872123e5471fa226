"""Order of the example gallery: from first steps to model selection and real data."""

EXAMPLE_ORDER = (
    "plot_quickstart.py",
    "plot_how_it_works.py",
    "plot_noisy_training.py",
    "plot_segmentation.py",
    "plot_grid_search.py",
    "plot_pipeline.py",
    "plot_real_images.py",
)


class ExampleOrder:
    """sphinx-gallery ``within_subsection_order``: listed files first, then by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        if filename in EXAMPLE_ORDER:
            return (EXAMPLE_ORDER.index(filename), filename)
        return (len(EXAMPLE_ORDER), filename)
