// One real Hadoop service on 127.0.0.1 from the hadoop-client-minicluster jar, for tests and for trying the pipeline
// on HDFS/YARN without a cluster. Run by scripts/hadoop_local.sh in single-file source mode (no jar is built):
//   java -cp '.jars/minicluster/*' scripts/hadoop/LocalHadoop.java hdfs|yarn STATE_DIR
// One JVM per role, so each has its own pid, heap and RSS and a stop kills exactly what it names.
//   hdfs: MiniDFSCluster, a NameNode + one DataNode. Data under STATE_DIR/hdfs, formatted only when new, so files
//         survive a stop/start.
//   yarn: MiniYARNCluster, a ResourceManager + one NodeManager, sized so a Spark app (AM + 2 executors) fits.
// Ports come from system properties (-Dport.nn=...); the script passes its env overrides. When the service is up the
// launcher writes STATE_DIR/ROLE.ready, then waits; SIGTERM runs the shutdown hook, which stops the service.

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.time.Instant;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;

public class LocalHadoop {
  static final String HOST = "127.0.0.1";

  static int port(String name) {
    String value = System.getProperty("port." + name);
    if (value == null) {
      throw new IllegalArgumentException("missing -Dport." + name);
    }
    return Integer.parseInt(value);
  }

  static String addr(String name) {
    return HOST + ":" + port(name);
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 2 || !(args[0].equals("hdfs") || args[0].equals("yarn"))) {
      System.err.println("usage: LocalHadoop hdfs|yarn STATE_DIR");
      System.exit(2);
    }
    String role = args[0];
    Path state = Paths.get(args[1]).toAbsolutePath();
    Instant start = Instant.now();
    String detail;
    try {
      detail = role.equals("hdfs") ? startHdfs(state) : startYarn(state);
    } catch (Throwable e) {
      // Exit: the half-started service's non-daemon threads would otherwise keep a dead JVM around.
      e.printStackTrace();
      System.exit(1);
      return;
    }
    long ms = Duration.between(start, Instant.now()).toMillis();
    Path ready = state.resolve(role + ".ready");
    Files.writeString(ready, detail + "\nstarted_in_ms=" + ms + "\n");
    System.out.println("LocalHadoop " + role + " ready in " + ms + " ms: " + detail.replace('\n', ' '));
    // Keep the JVM alive: the services run on their own (non-daemon and daemon) threads; the hook stops them.
    Thread.currentThread().join();
  }

  static String startHdfs(Path state) throws Exception {
    Path base = state.resolve("hdfs");
    boolean fresh = !Files.isDirectory(base.resolve("name-0-1").resolve("current"));  // MiniDFSCluster's layout
    Configuration conf = new HdfsConfiguration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.toString());
    conf.set("dfs.namenode.rpc-bind-host", HOST);
    conf.set("dfs.datanode.address", addr("dn"));
    conf.set("dfs.datanode.ipc.address", addr("dnipc"));
    conf.set("dfs.datanode.http.address", addr("dnhttp"));
    // One DataNode: replication 1, and a failed pipeline must not look for a replacement node that does not exist.
    conf.setInt("dfs.replication", 1);
    conf.set("dfs.client.block.write.replace-datanode-on-failure.policy", "NEVER");
    // A local test service: everyone may write anywhere (Spark on YARN writes /user/<name>/.sparkStaging).
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.setInt("dfs.namenode.safemode.extension", 0);
    MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
        .nameNodePort(port("nn"))
        .nameNodeHttpPort(port("nnhttp"))
        .numDataNodes(1)
        .checkDataNodeAddrConfig(true)  // use the dfs.datanode.* ports above instead of ephemeral ones
        .format(fresh)
        .build();
    Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown));
    cluster.waitActive();
    cluster.waitClusterUp();
    return "fs.defaultFS=hdfs://" + HOST + ":" + cluster.getNameNodePort() + "\nformatted=" + fresh;
  }

  static String startYarn(Path state) throws Exception {
    YarnConfiguration conf = new YarnConfiguration();
    // Keep the configured addresses (by default the minicluster rewrites them to ephemeral ports) and talk RPC.
    conf.setBoolean(YarnConfiguration.YARN_MINICLUSTER_FIXED_PORTS, true);
    conf.setBoolean(YarnConfiguration.YARN_MINICLUSTER_USE_RPC, true);
    conf.set("yarn.resourcemanager.hostname", HOST);
    conf.set("yarn.resourcemanager.address", addr("rm"));
    conf.set("yarn.resourcemanager.scheduler.address", addr("rmscheduler"));
    conf.set("yarn.resourcemanager.resource-tracker.address", addr("rmtracker"));
    conf.set("yarn.resourcemanager.admin.address", addr("rmadmin"));
    conf.set("yarn.resourcemanager.webapp.address", addr("rmweb"));
    conf.set("yarn.nodemanager.hostname", HOST);
    conf.set("yarn.nodemanager.address", addr("nm"));
    conf.set("yarn.nodemanager.localizer.address", addr("nmlocalizer"));
    conf.set("yarn.nodemanager.webapp.address", addr("nmweb"));
    // The RM keeps its own state (node attributes, ...) on the default filesystem: the local disk, not HDFS, so YARN
    // neither waits for the DataNode nor loses state with it. Spark's staging files come as hdfs:// URIs anyway.
    conf.set("fs.defaultFS", "file:///");
    // Sizing for a 2-core / 24 GiB machine: an 8 GB NodeManager, 256 MB grains, so a Spark driver AM + 2 executors fit.
    conf.setInt("yarn.nodemanager.resource.memory-mb", Integer.getInteger("yarn.nm.memory.mb", 8192));
    conf.setInt("yarn.nodemanager.resource.cpu-vcores", Integer.getInteger("yarn.nm.vcores", 4));
    conf.setInt("yarn.scheduler.minimum-allocation-mb", 256);
    conf.setInt("yarn.scheduler.maximum-allocation-mb", Integer.getInteger("yarn.nm.memory.mb", 8192));
    // The CapacityScheduler reads its queues from capacity-scheduler.xml, which the jar does not ship: one queue
    // with everything, and AMs may take half of it (the default 10% = 819 MB is less than a Spark AM asks for).
    conf.set("yarn.scheduler.capacity.root.queues", "default");
    conf.set("yarn.scheduler.capacity.root.default.capacity", "100");
    conf.set("yarn.scheduler.capacity.root.default.maximum-capacity", "100");
    conf.set("yarn.scheduler.capacity.maximum-am-resource-percent", "0.5");
    // Containers' virtual memory is several times their heap (JVM arenas); the checks would kill Spark executors.
    conf.setBoolean("yarn.nodemanager.vmem-check-enabled", false);
    conf.setBoolean("yarn.nodemanager.pmem-check-enabled", false);
    // A full-ish developer disk must not mark the only NodeManager unhealthy (no node, no container, a silent hang).
    conf.setFloat("yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage", 99.5f);
    conf.setBoolean("yarn.nodemanager.disk-health-checker.enable", false);
    // Keep a finished app's container logs on the NodeManager for `yarn logs`-less debugging (STATE_DIR/yarn/...).
    conf.setInt("yarn.nodemanager.delete.debug-delay-sec", 600);
    // The minicluster puts its NodeManager local and log dirs under ./target/<name>: run with cwd STATE_DIR/yarn.
    MiniYARNCluster cluster = new MiniYARNCluster("mfspark", 1, 1, 1);
    cluster.init(conf);
    Runtime.getRuntime().addShutdownHook(new Thread(cluster::stop));
    cluster.start();
    if (!cluster.waitForNodeManagersToConnect(120_000)) {
      throw new IllegalStateException("the NodeManager did not register with the ResourceManager in 120 s");
    }
    Configuration live = cluster.getConfig();
    return "yarn.resourcemanager.address=" + live.get("yarn.resourcemanager.address")
        + "\nyarn.resourcemanager.webapp.address=" + live.get("yarn.resourcemanager.webapp.address");
  }
}
