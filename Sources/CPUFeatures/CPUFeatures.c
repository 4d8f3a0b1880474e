// Header-only: see include/CPUFeatures.h.
