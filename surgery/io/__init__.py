"""The only place that touches files: prototxt text, caffemodel wire format, atomic writes."""
