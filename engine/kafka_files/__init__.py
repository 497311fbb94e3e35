"""Files the local Kafka broker needs at run time (package data): the Maven pom that
resolves its classpath and its Log4j 2 configuration."""
