# Reliability tests: swap I/O fault injection (FaultySwapDev), a time-bounded
# stress test with out-of-memory-and-swap, and shutdown with I/O in flight.
uvmrt_test(faultinject_test faultinject_test.cc faulty_swapdev.h)
uvmrt_test(stress_test stress_test.cc faulty_swapdev.h)
uvmrt_test(shutdown_test shutdown_test.cc faulty_swapdev.h)
uvmrt_test_inthread(faultinject_test)
uvmrt_test_inthread(stress_test)
uvmrt_test_inthread(shutdown_test)
