//! Cross-language tests: the C example and the C API test program, compiled with the system C
//! compiler against `include/metarec.h` and the freshly built `libmetarec.so`, run under
//! AddressSanitizer/UBSan (and valgrind when it is installed).

mod api_test;
mod kotlin;
mod packaging;
mod personalize;
mod portable;
mod support;
mod thread_test;
