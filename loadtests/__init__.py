"""Load generators and benchmarks for the router (`make bench`), with their saved reports."""
