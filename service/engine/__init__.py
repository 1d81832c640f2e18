"""Engine processes: one per device, owning the backends and batchers, and the front ends' link to them."""
