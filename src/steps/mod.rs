/*!
The steps `up` walks, built from the config. Each step kind lives in its own
file and implements `engine::Step`; this module only decides which steps a
config needs and how they depend on each other. Step kinds arrive one by one
(the AWS half, then the Kubernetes half); until then the graph is empty.
*/

use crate::config::Config;
use crate::engine::Step;

/// The `up` graph for a config, in declaration order.
pub fn up_steps(_config: &Config) -> Vec<Box<dyn Step>> {
    Vec::new()
}
