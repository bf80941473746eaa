# Deterministic unit tests of the paging core (uvm/), driven without threads
# through the fakes in fake_pmap.h and fake_swapdev.h.
uvmrt_test(uvm_pdaemon_test uvm_pdaemon_test.cc)
uvmrt_test(uvm_swap_test uvm_swap_test.cc)
uvmrt_test(uvm_upmap_test uvm_upmap_test.cc)
