# Usage: cmake -DMODE=install|subproject -DWEFT_BUILD_DIR=... -DWEFT_SOURCE_DIR=... -DWORK_DIR=... -P run.cmake
# install: installs the built weft into WORK_DIR/prefix and builds the consumer with find_package.
# subproject: builds the consumer with weft added by add_subdirectory.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${WORK_DIR})
set(consumer_src ${CMAKE_CURRENT_LIST_DIR})
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  message("${out}")
  set(last_output "${out}" PARENT_SCOPE)
endfunction()
if(MODE STREQUAL "install")
  run(${CMAKE_COMMAND} --install ${WEFT_BUILD_DIR} --prefix ${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
      -DCMAKE_BUILD_TYPE=Release)
else()
  run(${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/build -DWEFT_SOURCE_DIR=${WEFT_SOURCE_DIR}
      -DCMAKE_BUILD_TYPE=Release)
endif()
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build --parallel 2)
run(${WORK_DIR}/build/consumer)
# The consumer exits 0 and prints the sum it computed through weft (any step failing stops above with a
# non-zero exit status, which CTest sees).
if(NOT last_output MATCHES "consumer sum 55\n")
  message(FATAL_ERROR "the consumer printed the wrong result: ${last_output}")
endif()
