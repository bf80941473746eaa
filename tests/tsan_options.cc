// tsan_options.cc: ThreadSanitizer defaults for every test program.
//
// The in-thread fault handler (Options::in_thread_faults) runs the fault
// path inside a SIGBUS handler, where it may allocate (a chunk's page
// entries at its first fault, error statuses).  ThreadSanitizer reports any
// allocation in a signal handler as signal-unsafe; here it is safe, because
// the handler runs only on a touch of region memory, never inside malloc
// (docs/integration.md).  TSAN_OPTIONS in the environment still overrides
// this.
extern "C" const char* __tsan_default_options() {
  return "report_signal_unsafe=0";
}
