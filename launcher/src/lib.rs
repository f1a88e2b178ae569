//! The launcher's library: for now the network and resource-limit steps
//! (issue 5), which `launcher run` wires in around the clone of the container.

pub mod cgroups;
pub mod network;
