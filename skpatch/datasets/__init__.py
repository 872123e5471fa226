"""Image data sets: MVTec-layout folders, noisy training splits, synthetic defects."""
