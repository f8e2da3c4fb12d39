"""Training-free accelerators on the same cache (SPEC §1), each composable with every eviction strategy:
``config`` holds their parameters (torch-free), ``token_selection`` EfficientVLA's visual token selection."""
