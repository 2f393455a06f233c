# Checks that CTest runs every Catch2 test case of weft_tests (cmake -DTESTS=<weft_tests> -P this file):
#   * no name holds ';' (catch_discover_tests splits the test list there: the pieces become tests whose
#     filter matches nothing) or a character Catch2's command-line filter would parse ('*' is a
#     wildcard, '[' starts a tag, a leading '~' negates, '"' quotes; ',' is escaped by Catch's script);
#   * every test case has one of the tags tests/CMakeLists.txt discovers by ([unit], [model],
#     [stress]), so none is silently left out of CTest.
cmake_minimum_required(VERSION 3.25)
execute_process(COMMAND ${TESTS} --list-test-names-only RESULT_VARIABLE rc OUTPUT_VARIABLE names)
execute_process(COMMAND ${TESTS} "[unit],[model],[stress]" --list-test-names-only OUTPUT_VARIABLE tagged)
string(REPLACE ";" "<semicolon>" names "${names}")
string(REPLACE "\n" ";" names "${names}")
string(REPLACE ";" "<semicolon>" tagged "${tagged}")
string(REPLACE "\n" ";" tagged "${tagged}")
list(REMOVE_ITEM names "")
list(REMOVE_ITEM tagged "")
list(LENGTH names count)
if(count EQUAL 0)
  message(FATAL_ERROR "weft_tests lists no test case (exit ${rc})")
endif()
set(bad)
foreach(name IN LISTS names)
  if(name MATCHES "<semicolon>|[*\"]|\\[|^~")
    list(APPEND bad "name CTest or Catch2 would cut or parse: ${name}")
  endif()
  list(FIND tagged "${name}" found)
  if(found EQUAL -1)
    list(APPEND bad "no [unit], [model] or [stress] tag, so CTest never runs it: ${name}")
  endif()
endforeach()
if(bad)
  list(JOIN bad "\n  " text)
  message(FATAL_ERROR "test case names:\n  ${text}")
endif()
message("${count} test cases, all reachable from CTest")
