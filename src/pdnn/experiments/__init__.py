"""End-to-end experiments built from the library: the quick demo and the accuracy-vs-T studies."""
