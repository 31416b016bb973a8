# EmberLayers.cmake: the layers of the design hold at configure time (issue 13).
#
# ember_assert_links_none(<target> <forbidden target>...) walks what <target>
# links, directly and through every linked target's own (and interface) link
# libraries, and stops the configure with an error if it reaches a forbidden one:
# libember must link neither storage nor the server, whatever a later edit of a
# CMakeLists.txt adds. tests/layers/check_layers.sh checks the same of the built
# libraries (no storage or server symbol inside) and of the sources' includes.

function(_ember_link_closure target out)
  set(seen "")
  set(todo ${target})
  while(todo)
    list(POP_FRONT todo t)
    if(NOT TARGET ${t} OR t IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${t})
    get_target_property(_type ${t} TYPE)
    set(_deps "")
    if(NOT _type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(_direct ${t} LINK_LIBRARIES)
      if(_direct)
        list(APPEND _deps ${_direct})
      endif()
    endif()
    get_target_property(_iface ${t} INTERFACE_LINK_LIBRARIES)
    if(_iface)
      list(APPEND _deps ${_iface})
    endif()
    foreach(d IN LISTS _deps)
      # $<LINK_ONLY:x> and friends: keep the target name inside.
      string(REGEX REPLACE "^\\$<[A-Z_]+:(.*)>$" "\\1" d "${d}")
      list(APPEND todo ${d})
    endforeach()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

function(ember_assert_links_none target)
  if(NOT TARGET ${target})
    return()
  endif()
  _ember_link_closure(${target} closure)
  foreach(f IN LISTS ARGN)
    if(f IN_LIST closure)
      message(FATAL_ERROR "layer violation: ${target} links ${f} (directly or through "
                          "another target); libember must link neither storage nor the server")
    endif()
  endforeach()
endfunction()
