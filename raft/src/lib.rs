//! Metadata quorum layer (openraft) for the cluster issue; nothing here yet.
