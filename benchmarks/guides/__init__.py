"""The panel's guide recipes (issue 23): one module per published example, each with GUIDE and run_guide."""
