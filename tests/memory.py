"""A helper of the tests that bound what a call allocates."""
import tracemalloc


def peak_allocation(fn):
    """Peak bytes allocated through Python's and NumPy's allocators while fn runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
