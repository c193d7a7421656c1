# Writes OUT (engine_version.h) with ENGINE_VERSION, `git describe --always --dirty` of SRC, at every
# build; the file is rewritten only when the version changed, so nothing recompiles otherwise.
execute_process(COMMAND git -C ${SRC} describe --always --dirty
                OUTPUT_VARIABLE version OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT version)
  set(version unknown)
endif()
set(text "#define ENGINE_VERSION \"${version}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT} "${text}")
endif()
