# Sourced by scripts/gpu-check.sh: finds the libraries ONNX Runtime 1.29's CUDA provider loads,
# puts the folders of those the loader would not find on LD_LIBRARY_PATH, and writes a JSON
# record of where each one loads from, so a GPU run's figures say what ran them.
#   source scripts/cuda-libraries.sh && cuda_libraries_find record.json
# What the loader finds already (LD_LIBRARY_PATH, then ldconfig's cache) is left as it is. The
# rest comes first from the Python environments on PATH (python3, python), each asked where its
# packages are: a CUDA 13 PyTorch brings CUDA as nvidia-* wheels (nvidia/cu13/lib,
# nvidia/<package>/lib, or torch/lib; searched by file name, not by layout); then from
# CUDA_LIBRARY_SYSTEM_DIRS (globs, space-separated).

# Linked by libonnxruntime_providers_cuda.so (readelf -d): the driver's libcuda.so.1 and CUDA 13's
# runtime, cuBLAS and cuRAND. cuDNN 9 it dlopens (libcudnn.so.9), and cuDNN its libcudnn_*.so.9
# from that folder.
CUDA_LIBRARIES_NEEDED=(libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9)
# dlopened only by some operators (cuFFT by the FFT ones, NVRTC by cuDNN's runtime-compiled
# kernels): recorded, and their folders added, but their absence does not stop the provider.
CUDA_LIBRARIES_OPTIONAL=(libcufft.so.12 libnvrtc.so.13)
CUDA_LIBRARY_SYSTEM_DIRS=${CUDA_LIBRARY_SYSTEM_DIRS:-/usr/local/nvidia/lib64 /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /opt /usr/local/lib}
# Seconds each Python may take to say where its packages are (it imports nothing heavy).
CUDA_LIBRARIES_PYTHON_TIMEOUT_S=${CUDA_LIBRARIES_PYTHON_TIMEOUT_S:-20}

# Prints one JSON object, then the folders that may hold the wheels' libraries, one a line.
# find_spec locates torch and the nvidia namespace (PYTHONPATH included) without importing them:
# importing torch takes seconds and starts CUDA.
_CUDA_LIBRARIES_PROBE='
import importlib.util, json, os, site, sys, sysconfig

def locations(package):
    try:
        spec = importlib.util.find_spec(package)
    except Exception:
        return []
    return list(spec.submodule_search_locations or []) if spec else []

paths = sysconfig.get_paths()
site_packages = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
record = {
    "executable": sys.executable,
    "version": sys.version.split()[0],
    "sitePackages": site_packages,
    "userSitePackages": user_site,
    "purelib": paths.get("purelib"),
    "platlib": paths.get("platlib"),
    "nvidia": locations("nvidia"),
    "torch": locations("torch"),
}
print(json.dumps(record))
bases = [d for d in site_packages + [user_site, paths.get("purelib"), paths.get("platlib")] if d]
roots = [os.path.join(d, "nvidia") for d in bases] + record["nvidia"]
roots += [os.path.join(d, "torch", "lib") for d in bases] + [os.path.join(d, "lib") for d in record["torch"]]
seen = set()
for root in roots:
    root = os.path.realpath(root)
    if os.path.isdir(root) and root not in seen:
        seen.add(root)
        print(root)
'

_cuda_libraries_json_string() {
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}

# The arguments after the first, joined by the first.
_cuda_libraries_join() {
  local separator=$1 joined="" item
  shift
  for item in "$@"; do joined+=${joined:+$separator}$item; done
  printf '%s' "$joined"
}

# `name path` for each library of ldconfig's cache (x86-64 entries).
_cuda_libraries_ldconfig() {
  command -v ldconfig >/dev/null || return 0
  ldconfig -p 2>/dev/null | awk '/x86-64/ && $(NF - 1) == "=>" {print $1, $NF}'
}

# The first of `dirs...` that holds `name`.
_cuda_libraries_first() {
  local name=$1 dir
  shift
  for dir in "$@"; do
    if [ -n "$dir" ] && [ -e "$dir/$name" ]; then
      printf '%s\n' "$dir"
      return 0
    fi
  done
  return 1
}

# Sets cuda_libraries_missing (needed libraries not found) and exports LD_LIBRARY_PATH.
cuda_libraries_find() {
  local record=$1 python out rc name dir file found label i
  local -a libraries=("${CUDA_LIBRARIES_NEEDED[@]}" "${CUDA_LIBRARIES_OPTIONAL[@]}")
  local -a pythons=() python_dirs=() python_labels=() added=() entries=() given=()
  local -A source_of=() from_ldconfig=() searched=()
  IFS=: read -r -a given <<<"${LD_LIBRARY_PATH:-}"
  while read -r name file; do
    [ -n "${from_ldconfig[$name]:-}" ] || from_ldconfig[$name]=$file
  done < <(_cuda_libraries_ldconfig)

  for python in python3 python; do
    command -v "$python" >/dev/null || continue
    rc=0
    out=$(timeout "$CUDA_LIBRARIES_PYTHON_TIMEOUT_S" "$python" -c "$_CUDA_LIBRARIES_PROBE" 2>/dev/null) || rc=$?
    if [ "$rc" -ne 0 ] || [ -z "$out" ]; then
      echo "[cuda-libraries] $python ($(command -v "$python")) did not say where its packages are (exit $rc)" >&2
      pythons+=("{\"command\": $(_cuda_libraries_json_string "$python"), \"failed\": \"exit $rc\"}")
      continue
    fi
    pythons+=("{\"command\": $(_cuda_libraries_json_string "$python"), \"paths\": $(head -1 <<<"$out")}")
    echo "[cuda-libraries] $python: $(head -1 <<<"$out")" >&2
    while read -r dir; do
      [ -n "$dir" ] && [ -z "${searched[$dir]:-}" ] || continue
      searched[$dir]=1
      python_dirs+=("$dir")
      python_labels+=("$python site-packages")
    done < <(tail -n +2 <<<"$out")
  done

  # Libraries the loader would not find now: from the Pythons' folders first, then the system's.
  # Their folders go after the given LD_LIBRARY_PATH, so what it holds still wins, and the
  # Pythons' before the system's, so one consistent set of wheels is what loads.
  local -a added_python=() added_system=()
  for name in "${libraries[@]}"; do
    _cuda_libraries_first "$name" "${given[@]}" >/dev/null && continue
    [ -z "${from_ldconfig[$name]:-}" ] || continue
    found=""
    for i in "${!python_dirs[@]}"; do
      file=$(find "${python_dirs[$i]}" -name "$name" -print -quit 2>/dev/null || true)
      if [ -n "$file" ]; then found=$file label=${python_labels[$i]}; break; fi
    done
    if [ -z "$found" ]; then
      # shellcheck disable=SC2086 # the system folders are globs
      found=$(find $CUDA_LIBRARY_SYSTEM_DIRS -name "$name" -print -quit 2>/dev/null || true)
      label="system folder"
    fi
    [ -n "$found" ] || continue
    dir=$(dirname "$found")
    [ -z "${source_of[$dir]:-}" ] || continue
    source_of[$dir]=$label
    if [ "$label" = "system folder" ]; then added_system+=("$dir"); else added_python+=("$dir"); fi
  done
  added=("${added_python[@]}" "${added_system[@]}")
  for dir in "${added[@]}"; do LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$dir; done
  export LD_LIBRARY_PATH

  # Where each one loads from now, in the loader's order (LD_LIBRARY_PATH, then ldconfig's cache):
  # a folder added for one library may hold another too.
  local -a path_dirs=()
  IFS=: read -r -a path_dirs <<<"${LD_LIBRARY_PATH:-}"
  cuda_libraries_missing=()
  for name in "${libraries[@]}"; do
    local needed=false
    [[ " ${CUDA_LIBRARIES_NEEDED[*]} " == *" $name "* ]] && needed=true
    if dir=$(_cuda_libraries_first "$name" "${path_dirs[@]}"); then
      file=$dir/$name
      label=${source_of[$dir]:-LD_LIBRARY_PATH}
    elif [ -n "${from_ldconfig[$name]:-}" ]; then
      file=${from_ldconfig[$name]}
      label=ldconfig
    else
      file="" label=""
    fi
    if [ -n "$file" ]; then
      echo "[cuda-libraries] $name: $file ($label)" >&2
      entries+=("{\"name\": \"$name\", \"needed\": $needed, \"path\": $(_cuda_libraries_json_string "$file"), \"source\": \"$label\"}")
    else
      echo "[cuda-libraries] $name: not found" >&2
      entries+=("{\"name\": \"$name\", \"needed\": $needed, \"path\": null, \"source\": null}")
      [ "$needed" = false ] || cuda_libraries_missing+=("$name")
    fi
  done

  local -a folders=() added_json=()
  for dir in "${python_dirs[@]}"; do folders+=("$(_cuda_libraries_json_string "$dir")"); done
  for dir in "${added[@]}"; do added_json+=("$(_cuda_libraries_json_string "$dir")"); done
  {
    printf '{\n  "pythons": [%s],\n' "$(_cuda_libraries_join ', ' "${pythons[@]}")"
    printf '  "pythonLibraryFolders": [%s],\n' "$(_cuda_libraries_join ', ' "${folders[@]}")"
    printf '  "addedToLibraryPath": [%s],\n' "$(_cuda_libraries_join ', ' "${added_json[@]}")"
    printf '  "libraries": [\n    %s\n  ]\n}\n' "$(_cuda_libraries_join $',\n    ' "${entries[@]}")"
  } >"$record"
}
