# Runs one program for a CTest test and fails unless ALL of these hold (CTest's own
# PASS_REGULAR_EXPRESSION ignores the exit status, so a program that printed the right line and then
# crashed, leaked or raced would pass):
#   * the program exits with status 0 (or EXIT_CODE when given: e.g. 134 for a deliberate abort);
#   * its standard output matches EXPECT (a CMake regular expression), when given;
#   * neither output stream shows a sanitizer report (AddressSanitizer, LeakSanitizer,
#     ThreadSanitizer, UndefinedBehaviorSanitizer "runtime error:") or a Catch2 failure;
#   * no line reports tasklets left alive ("tasklets left...: N" with N != 0).
#
# Usage (what weft_checked_test() in WeftTesting.cmake writes):
#   cmake -DEXPECT=<regex> [-DEXIT_CODE=<n>] [-DSTDERR_EXPECT=<regex>] -P weft_run_checked.cmake -- <program> <args...>
cmake_minimum_required(VERSION 3.25)

set(command)
set(seen_separator FALSE)
math(EXPR last "${CMAKE_ARGC} - 1")
foreach(i RANGE 1 ${last})
  if(seen_separator)
    list(APPEND command "${CMAKE_ARGV${i}}")
  elseif(CMAKE_ARGV${i} STREQUAL "--")
    set(seen_separator TRUE)
  endif()
endforeach()
if(NOT command)
  message(FATAL_ERROR "weft_run_checked: no command after '--'")
endif()
if(NOT DEFINED EXIT_CODE)
  set(EXIT_CODE 0)
endif()

execute_process(COMMAND ${command} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
# Show what the program printed (CTest keeps it for --output-on-failure).
message("${out}")
if(err)
  message("--- stderr ---\n${err}")
endif()

set(problems)
if(NOT rc STREQUAL "${EXIT_CODE}")
  list(APPEND problems "exit status ${rc}, expected ${EXIT_CODE}")
endif()
if(DEFINED EXPECT AND NOT out MATCHES "${EXPECT}")
  list(APPEND problems "standard output does not match: ${EXPECT}")
endif()
if(DEFINED STDERR_EXPECT AND NOT err MATCHES "${STDERR_EXPECT}")
  list(APPEND problems "standard error does not match: ${STDERR_EXPECT}")
endif()
foreach(stream out err)
  if(${stream} MATCHES "(Address|Leak|Thread|Memory|UndefinedBehavior)Sanitizer|runtime error: ")
    list(APPEND problems "a sanitizer report on std${stream}: ${CMAKE_MATCH_0}")
  endif()
  if(${stream} MATCHES "tasklets left[^:\n]*: *([1-9][0-9]*)")
    list(APPEND problems "tasklets left alive: ${CMAKE_MATCH_1}")
  endif()
  if(${stream} MATCHES "test cases?:[^\n]*failed|No tests ran")
    list(APPEND problems "Catch2 reports a failure or no test: ${CMAKE_MATCH_0}")
  endif()
endforeach()

if(problems)
  list(JOIN problems "\n  " text)
  message(FATAL_ERROR "weft_run_checked: FAILED\n  ${text}")
endif()
message("weft_run_checked: passed (exit ${rc})")
