# Reads a Vagrantfile with Vagrant's configuration API stood in by recorders, and prints, as JSON, what each
# machine would be: its name, hostname, private network IP, and its shell provisioners (environment and inline
# script), plus the synced folders. The end-to-end test (tests/tests/vagrant.rs) runs those provisioners in
# network namespaces as the machines, since these hosts have no hypervisor for Vagrant itself.
#
#   ruby provisioners.rb path/to/Vagrantfile
require "json"

class Recorder
  attr_reader :data

  def initialize(data)
    @data = data
  end

  def method_missing(name, *args, **kwargs, &block)
    key = name.to_s
    if key.end_with?("=")
      @data[key.chomp("=")] = args.first
      return args.first
    end
    case key
    when "synced_folder"
      (@data["synced_folders"] ||= []) << { "host" => args[0], "guest" => args[1] }
    when "network"
      (@data["networks"] ||= []) << { "type" => args[0] }.merge(kwargs.transform_keys(&:to_s))
    when "provision"
      (@data["provisioners"] ||= []) << { "type" => args[0] }.merge(kwargs.transform_keys(&:to_s))
    when "provider"
      block&.call(Recorder.new({}))
    when "define"
      machine = { "name" => args[0].to_s, "options" => kwargs.transform_keys(&:to_s) }
      (@data["machines"] ||= []) << machine
      block&.call(MachineRecorder.new(machine))
    else
      return (@data[key] ||= Recorder.new({})) if args.empty? && block.nil?
    end
    nil
  end

  def respond_to_missing?(*)
    true
  end

  def to_json(*args)
    @data.to_json(*args)
  end
end

# `config.vm.define "x" do |m| m.vm.hostname = ... end`: m.vm records into the machine itself.
class MachineRecorder
  def initialize(machine)
    @machine = machine
  end

  def vm
    Recorder.new(@machine)
  end
end

module Vagrant
  def self.configure(_version)
    config = Recorder.new({})
    yield config
    puts JSON.pretty_generate(config.data["vm"].data)
  end
end

load ARGV.fetch(0)
