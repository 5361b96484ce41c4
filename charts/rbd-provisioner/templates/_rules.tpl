{{/* The ClusterRole's rules: the same as manifests/rbac/clusterrole.yaml (tests/helm compares
them); a rule added there is added here, in this one place. */}}
{{- define "rbd-provisioner.clusterRules" -}}
# Claims are read, never written (their status is patched with the FileSystemResizePending
# condition after a resize); volumes are created, patched and deleted, never replaced.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["persistentvolumes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get", "list", "watch"]
# VolumeSnapshots of csi-flavour volumes.
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshotcontents"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshotcontents/status"]
  verbs: ["patch"]
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshots", "volumesnapshotclasses"]
  verbs: ["get", "list", "watch"]
# kube-system's uid identifies this Kubernetes cluster in the stamp of every image.
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: ["kube-system"]
  verbs: ["get"]
# ceph-csi-operator's ClientProfiles (found by name: the clusterID, in any namespace) and the
# CephConnections they name: monitors for a volume whose class no longer reaches its cluster.
- apiGroups: ["csi.ceph.io"]
  resources: ["clientprofiles", "cephconnections"]
  verbs: ["get", "list"]
# Events about claims (events.k8s.io/v1) and PersistentVolumes (core/v1, in "default").
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Secrets: only get, per namespace (manifests/rbac/secrets.yaml). */}}
{{- define "rbd-provisioner.secretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end -}}
