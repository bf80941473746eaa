# integration.cmake: the ways into uvmrt for applications (docs/integration.md).
#
#   uvmrt_env       OptionsFromEnv(): runtime options from UVMRT_* variables
#   uvmrt-malloc    libuvmrt-malloc.so, the link-time malloc (uvmrt-malloc.pc)
#   uvmstat         prints a running process's uvmexp counters
#   hashmap_demo    an absl::flat_hash_map four times the budget, through
#                   uvmrt::Allocator (uvmrt/allocator.h, uvmrt/memory_resource.h)
#   tests           tests/integration/
#
# Included at the end of the top-level CMakeLists.txt, after runtime/ and
# tests/, so the uvmrt target exists here.
if(NOT TARGET uvmrt)
  message(STATUS "integration: target uvmrt not found; skipping")
  return()
endif()

set(_uvmrt_int_root ${CMAKE_CURRENT_LIST_DIR}/..)
cmake_path(NORMAL_PATH _uvmrt_int_root)

# --- uvmrt_env: options from the environment --------------------------------
add_library(uvmrt_env STATIC ${_uvmrt_int_root}/runtime/env.cc)
add_library(uvmrt::env ALIAS uvmrt_env)
target_include_directories(uvmrt_env PUBLIC
  $<BUILD_INTERFACE:${_uvmrt_int_root}/runtime/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(uvmrt_env PUBLIC uvmrt absl::statusor absl::strings absl::str_format)
set_target_properties(uvmrt_env PROPERTIES
  EXPORT_NAME env
  PUBLIC_HEADER "${_uvmrt_int_root}/runtime/include/uvmrt/env.h")
install(TARGETS uvmrt_env EXPORT uvmrtTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/uvmrt)
# The C++ front-ends are header-only over the uvmrt library.
install(FILES
  ${_uvmrt_int_root}/runtime/include/uvmrt/memory_resource.h
  ${_uvmrt_int_root}/runtime/include/uvmrt/allocator.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/uvmrt)

# --- uvmrt-malloc: the link-time malloc --------------------------------------
find_package(mimalloc 2.0 CONFIG QUIET)
if(mimalloc_FOUND)
  # The constructor that starts the runtime, linked after the uvmrt library
  # so that it runs after uvmrt's static initializers.
  add_library(uvmrt_malloc_ctor STATIC ${_uvmrt_int_root}/runtime/malloc/uvmrt_malloc_ctor.cc)
  target_include_directories(uvmrt_malloc_ctor PRIVATE ${_uvmrt_int_root})

  add_library(uvmrt-malloc SHARED
    ${_uvmrt_int_root}/runtime/malloc/uvmrt_malloc.cc
    ${_uvmrt_int_root}/runtime/malloc/uvmrt_malloc_start.cc)
  add_library(uvmrt::malloc ALIAS uvmrt-malloc)
  target_include_directories(uvmrt-malloc
    PUBLIC
      $<BUILD_INTERFACE:${_uvmrt_int_root}/runtime/malloc/include>
      $<BUILD_INTERFACE:${_uvmrt_int_root}/runtime/include>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${_uvmrt_int_root})
  target_link_libraries(uvmrt-malloc PRIVATE
    uvmrt uvmrt_env mimalloc absl::str_format Threads::Threads ${CMAKE_DL_LIBS}
    "$<LINK_LIBRARY:WHOLE_ARCHIVE,uvmrt_malloc_ctor>")
  # The allocation functions must not be turned back into calls to
  # themselves (malloc + memset -> calloc).
  set_source_files_properties(${_uvmrt_int_root}/runtime/malloc/uvmrt_malloc.cc
    PROPERTIES COMPILE_OPTIONS "-fno-builtin")
  # Export only the allocation family, new/delete and uvmrt_malloc_*: the
  # runtime inside stays private, so a program may also link the uvmrt
  # library itself.
  target_link_options(uvmrt-malloc PRIVATE "LINKER:--exclude-libs,ALL"
    "LINKER:--version-script=${_uvmrt_int_root}/runtime/malloc/uvmrt-malloc.map")
  set_target_properties(uvmrt-malloc PROPERTIES
    LINK_DEPENDS ${_uvmrt_int_root}/runtime/malloc/uvmrt-malloc.map)
  if(NOT UVMRT_SANITIZE)
    target_link_options(uvmrt-malloc PRIVATE "LINKER:--no-undefined")
  endif()
  set_target_properties(uvmrt-malloc PROPERTIES
    OUTPUT_NAME uvmrt-malloc
    VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
    PUBLIC_HEADER "${_uvmrt_int_root}/runtime/malloc/include/uvmrt/uvmrt_malloc.h")
  file(RELATIVE_PATH UVMRT_MALLOC_PC_PREFIX
    ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
  configure_file(${_uvmrt_int_root}/runtime/malloc/uvmrt-malloc.pc.in
    ${CMAKE_CURRENT_BINARY_DIR}/uvmrt-malloc.pc @ONLY)
  install(TARGETS uvmrt-malloc
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT malloc
    PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/uvmrt COMPONENT malloc)
  # uvmrt_malloc.h includes uvmrt_types.h: the component carries it too.
  install(FILES ${_uvmrt_int_root}/runtime/include/uvmrt/uvmrt_types.h
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/uvmrt COMPONENT malloc)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/uvmrt-malloc.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT malloc)
else()
  message(STATUS "integration: mimalloc 2.0 not found (libmimalloc-dev); skipping uvmrt-malloc")
endif()

# --- uvmstat -------------------------------------------------------------------
add_executable(uvmstat ${_uvmrt_int_root}/tools/uvmstat.cc)
# Only the layout of the counters file (uvm/uvmexp_shm.h) is needed.
target_include_directories(uvmstat PRIVATE
  ${_uvmrt_int_root}/runtime ${_uvmrt_int_root}/runtime/include)
target_link_libraries(uvmstat PRIVATE absl::str_format absl::strings)
install(TARGETS uvmstat RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# --- hashmap_demo ----------------------------------------------------------------
add_executable(hashmap_demo ${_uvmrt_int_root}/examples/hashmap_demo.cc)
target_link_libraries(hashmap_demo PRIVATE uvmrt uvmrt_env absl::flat_hash_map absl::str_format)

# --- tests -----------------------------------------------------------------------
if(UVMRT_BUILD_TESTS)
  enable_testing()
  find_package(GTest REQUIRED)
  include(GoogleTest)
  set(_uvmrt_int_tests ${_uvmrt_int_root}/tests/integration)

  function(uvmrt_integration_test name)
    add_executable(${name} ${ARGN})
    target_include_directories(${name} PRIVATE ${_uvmrt_int_root}/runtime ${_uvmrt_int_root})
    target_link_libraries(${name} PRIVATE uvmrt uvmrt_env GTest::gtest GTest::gtest_main
      absl::flat_hash_map absl::str_format Threads::Threads)
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
  endfunction()

  uvmrt_integration_test(integration_env_test ${_uvmrt_int_tests}/env_test.cc)
  uvmrt_integration_test(integration_pmr_test ${_uvmrt_int_tests}/pmr_test.cc)
  uvmrt_integration_test(integration_regions10k_test ${_uvmrt_int_tests}/regions10k_test.cc)
  uvmrt_integration_test(integration_uvmstat_test ${_uvmrt_int_tests}/uvmstat_test.cc)
  target_compile_definitions(integration_uvmstat_test PRIVATE UVMSTAT_PATH="$<TARGET_FILE:uvmstat>")
  add_dependencies(integration_uvmstat_test uvmstat)

  # The link-time malloc replaces malloc; sanitizers replace it themselves, so
  # these run only in builds without one.
  if(TARGET uvmrt-malloc AND NOT UVMRT_SANITIZE)
    # Programs linked with nothing but uvmrt-malloc, as pkg-config links them.
    add_executable(malloc_c_test ${_uvmrt_int_tests}/malloc_c_test.c)
    target_link_libraries(malloc_c_test PRIVATE uvmrt-malloc)
    add_executable(malloc_cxx_test ${_uvmrt_int_tests}/malloc_cxx_test.cc)
    target_link_libraries(malloc_cxx_test PRIVATE uvmrt-malloc)
    # The tests look at what the calls return, so the compiler must not
    # elide or fold them (clang removes allocations it sees unused); sized
    # operator delete is off by default in clang.
    target_compile_options(malloc_c_test PRIVATE -fno-builtin)
    target_compile_options(malloc_cxx_test PRIVATE -fno-builtin -fsized-deallocation)
    set(_uvmrt_malloc_env UVMRT_BUDGET=16M UVMRT_SWAP_SIZE=240M)
    add_test(NAME malloc_c_test COMMAND malloc_c_test)
    add_test(NAME malloc_cxx_test COMMAND malloc_cxx_test)
    set_tests_properties(malloc_c_test malloc_cxx_test PROPERTIES
      ENVIRONMENT "${_uvmrt_malloc_env}" TIMEOUT 300)

    # Bad UVMRT_* values: one line naming the variable, exit status 1.
    uvmrt_integration_test(integration_malloc_env_test ${_uvmrt_int_tests}/malloc_env_test.cc)
    target_compile_definitions(integration_malloc_env_test PRIVATE
      MALLOC_C_TEST_PATH="$<TARGET_FILE:malloc_c_test>")
    add_dependencies(integration_malloc_env_test malloc_c_test)

    # The installed tree, through a real pkg-config.
    add_test(NAME malloc_pkgconfig_test
      COMMAND bash ${_uvmrt_int_tests}/malloc_pkgconfig_test.sh
        ${CMAKE_BINARY_DIR} ${_uvmrt_int_tests}/malloc_pkgconfig_prog.c
        ${_uvmrt_int_tests}/malloc_c_test.c ${_uvmrt_int_tests}/malloc_cxx_test.cc)
    set_tests_properties(malloc_pkgconfig_test PROPERTIES
      ENVIRONMENT "${_uvmrt_malloc_env}" TIMEOUT 300)
  endif()
endif()
