# Test helpers shared by tests/, samples/ and bench/.
#
# weft_checked_test(<name> COMMAND <program> [args...] [EXPECT <regex>] [STDERR_EXPECT <regex>]
#                   [EXIT_CODE <n>] [LABELS ...] [TIMEOUT <s>] [ENVIRONMENT ...])
# adds a CTest test that runs the program through weft_run_checked.cmake: it passes only when the
# program exits with EXIT_CODE (default 0), its stdout matches EXPECT, and nothing reports a sanitizer
# finding or tasklets left alive. Use it instead of PASS_REGULAR_EXPRESSION, which ignores the exit
# status. A regex cannot hold ';' (CMake's list separator): match it with '.'.
set(WEFT_RUN_CHECKED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/weft_run_checked.cmake)

function(weft_checked_test name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "EXPECT;STDERR_EXPECT;EXIT_CODE;TIMEOUT" "COMMAND;LABELS;ENVIRONMENT")
  if(NOT arg_COMMAND)
    message(FATAL_ERROR "weft_checked_test(${name}): COMMAND is required")
  endif()
  set(defs)
  if(DEFINED arg_EXPECT)
    list(APPEND defs "-DEXPECT=${arg_EXPECT}")
  endif()
  if(DEFINED arg_STDERR_EXPECT)
    list(APPEND defs "-DSTDERR_EXPECT=${arg_STDERR_EXPECT}")
  endif()
  if(DEFINED arg_EXIT_CODE)
    list(APPEND defs "-DEXIT_CODE=${arg_EXIT_CODE}")
  endif()
  list(GET arg_COMMAND 0 program)
  if(TARGET ${program})
    list(REMOVE_AT arg_COMMAND 0)
    list(PREPEND arg_COMMAND "$<TARGET_FILE:${program}>")
  endif()
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 600)
  endif()
  add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} ${defs} -P ${WEFT_RUN_CHECKED_SCRIPT} -- ${arg_COMMAND})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${arg_TIMEOUT})
  if(arg_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${arg_LABELS}")
  endif()
  if(arg_ENVIRONMENT)
    set_tests_properties(${name} PROPERTIES ENVIRONMENT "${arg_ENVIRONMENT}")
  endif()
endfunction()
