# EmberTesting.cmake: the one way a unit test is registered (included from the
# top CMakeLists.txt when EMBER_BUILD_TESTS is on, before the layers' folders).
#
# ember_unit_test(<name>
#     [SOURCES <file>...]      default: tests/unit/test_<name>.c
#     [LINK <library>...]      what it links besides Check (nothing is implicit:
#                              a storage suite says ember_storage, a client one
#                              ember_static)
#     [LABELS <label>...]      besides "unit"
#     [TIMEOUT <s>]            default 300; also Check's CK_DEFAULT_TIMEOUT
#     [ENVIRONMENT <K=V>...]
#     [ARGS <arg>...]          the test's command-line arguments
#     [TARGET <executable>]    default test_<name>
#     [SKIP_RETURN_CODE <n>]   an exit status ctest reports as skipped
#     [NO_CHECK])              not a Check suite: no Check, no CK_DEFAULT_TIMEOUT
#
# registers the ctest test unit.<name>. Every executable knows the fixtures'
# folder as EMBER_ASSETS_DIR. The target exists after the call, for more
# target_* settings.
set(EMBER_ASSETS_DIR ${PROJECT_SOURCE_DIR}/tests/assets)

function(ember_unit_test name)
  cmake_parse_arguments(A "NO_CHECK" "TIMEOUT;TARGET;SKIP_RETURN_CODE"
                        "SOURCES;LINK;LABELS;ENVIRONMENT;ARGS" ${ARGN})
  if(A_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ember_unit_test(${name}): unknown arguments ${A_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT A_SOURCES)
    set(A_SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_${name}.c)
  endif()
  if(NOT A_TARGET)
    set(A_TARGET test_${name})
  endif()
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  add_executable(${A_TARGET} ${A_SOURCES})
  target_link_libraries(${A_TARGET} PRIVATE ${A_LINK})
  target_compile_definitions(${A_TARGET} PRIVATE EMBER_ASSETS_DIR="${EMBER_ASSETS_DIR}")
  set(labels unit ${A_LABELS})
  set(env ${A_ENVIRONMENT})
  list(REMOVE_ITEM env "")
  if(NOT A_NO_CHECK)
    target_link_libraries(${A_TARGET} PRIVATE PkgConfig::CHECK)
    list(PREPEND env "CK_DEFAULT_TIMEOUT=${A_TIMEOUT}")
  endif()
  add_test(NAME unit.${name} COMMAND ${A_TARGET} ${A_ARGS})
  set_tests_properties(unit.${name} PROPERTIES LABELS "${labels}" TIMEOUT ${A_TIMEOUT})
  if(env)
    set_tests_properties(unit.${name} PROPERTIES ENVIRONMENT "${env}")
  endif()
  if(DEFINED A_SKIP_RETURN_CODE)
    set_tests_properties(unit.${name} PROPERTIES SKIP_RETURN_CODE ${A_SKIP_RETURN_CODE})
  endif()
endfunction()

# ember_tests_without_retry_budget(): every test registered so far in the
# calling folder runs with EMBER_RETRY_BUDGET=0, libember's behaviour before the
# retry budget (ember.h, retry_budget_ms): the default budget (120 s) would make
# each test that talks to a stopped server wait it out. The tests of the budget
# set theirs explicitly (tests/integration/test_retry_budget.c,
# test_restart_demo.sh, tests/python/test_retry.py). Call it last in a folder.
function(ember_tests_without_retry_budget)
  get_property(_tests DIRECTORY PROPERTY TESTS)
  foreach(_t IN LISTS _tests)
    set_property(TEST ${_t} APPEND PROPERTY ENVIRONMENT "EMBER_RETRY_BUDGET=0")
  endforeach()
endfunction()
